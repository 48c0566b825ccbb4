pytest_plugins = ["sgs.testing.fixtures"]
