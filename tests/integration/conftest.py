"""The integration tests' fixtures beyond tests/conftest.py: the gateway tests' cluster
(tests/gateway_helpers.py), shared with tests/security."""

from tests.gateway_helpers import gateway_settings as gateway_settings
from tests.gateway_helpers import guard_policy as guard_policy
from tests.gateway_helpers import gw as gw
from tests.gateway_helpers import gw_config as gw_config
