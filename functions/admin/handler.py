"""Control plane entry point: the admin API under Mangum (buffered function URL, AWS_IAM auth)."""

from __future__ import annotations

from mangum import Mangum

from meterline.admin.app import create_admin_app
from meterline.logs import configure

configure("admin")

# Built at init (outside the handler) so warm invocations reuse it; no AWS client is created
# until the first request needs one.
handler = Mangum(create_admin_app(), lifespan="off")
