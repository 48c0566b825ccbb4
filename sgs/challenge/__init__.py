"""`sgs challenge`: the Dummy Pipeline suite that proves a Site works (issue 20 item 2; docs/challenge.md)."""
