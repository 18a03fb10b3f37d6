"""Behavioural and structural probes (main paper App. B, C): model + fixed batch -> numbers.

``stagewise.probes.regression`` holds the regression-transformer probes of App. C.
"""
