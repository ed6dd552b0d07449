"""XCA gateways (ITI TF-2b §3.38 Cross Gateway Query, §3.39 Cross Gateway Retrieve).

- :mod:`xds.gateway.responding` answers ITI-38 from this community's registry and ITI-39 from its
  repositories, through the same handlers (and so the same trust checks) as ITI-18 and ITI-43.
- :mod:`xds.gateway.initiating` takes ITI-18 and ITI-43 from local consumers, fans them out as
  ITI-38 / ITI-39 to the communities of the directory (``[[community]]``) and joins the answers.

Both are stateless compositions: the app (``xds.server``) hands them the registry's and
repositories' handlers and the directory.
"""
