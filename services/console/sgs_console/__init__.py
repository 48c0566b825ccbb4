"""The web console: every Run, Pipeline, Site, transfer and dataset, and the actions on them, in a browser.

Server-rendered HTML (Jinja2) with one small script for live updates; every action is sent to the Kubernetes
API with the signed-in person's own bearer token, so the API server's RBAC and admission decide.
"""
