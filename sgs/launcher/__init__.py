"""The task launcher shared by the local executor, the bridge's process provider and the pilot agent.

Kept free of the planner and the model so that a per-pod process imports it cheaply.
"""
