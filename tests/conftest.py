"""
pytest configuration.  The reactor is installed by pytest-twisted in
pytest_configure: never import twisted.internet.reactor at module level here.
"""
