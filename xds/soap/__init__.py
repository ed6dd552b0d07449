"""SOAP 1.2, WS-Addressing and MTOM/XOP as IHE web services use them (ITI TF-2 Appendix V)."""
