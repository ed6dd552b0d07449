"""The service descriptions this deployment serves (``registry.wsdl``, ``repository.wsdl``) and the
official schemas they import (``ihe-iti/``), installed as the data package ``xds.wsdl``."""
