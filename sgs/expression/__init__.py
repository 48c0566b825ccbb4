"""The expression languages the sgs services share.

- :mod:`sgs.expression.dimensions`: which datasets (``band IN ('VIS','Y') AND tile = 102345``), compiled to
  parameterised SQL by the archive and to a data-ID matcher by the transfer service's rules.
- :mod:`sgs.expression.sites`: which Sites (``tier=primary & !maintenance``), for replication rules.
"""

from sgs.expression.errors import ExpressionError
from sgs.expression.sites import SiteFacts, check_sites, evaluate_sites, parse_sites, select_sites

__all__ = ["ExpressionError", "SiteFacts", "check_sites", "evaluate_sites", "parse_sites", "select_sites"]
