"""Replaying the NIST XDS Toolkit test kit against this registry (the later ``xds conformance``).

- :mod:`xds.conformance.testplan` reads the kit's test plan grammar (tests, sections, steps).
- :mod:`xds.conformance.ebrim21` converts the kit's ebRIM 2.1 submissions to ebRIM 3.0.
- :mod:`xds.conformance.substitution` prepares a step's metadata for sending (symbols, patient
  ids, uniqueIds, UUIDs) and evaluates its ``<Report>`` XPaths.
"""
