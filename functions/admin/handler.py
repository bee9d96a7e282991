"""Control plane entry point: the admin API under Mangum (buffered function URL, AWS_IAM auth), and
the scheduled tasks an EventBridge rule sends it directly (`{"meterline_task": "prices.sync"}`, see
meterline/admin/tasks.py)."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from meterline.admin import tasks
from meterline.admin.app import create_admin_app
from meterline.logs import configure

configure("admin")

# Built at init (outside the handler) so warm invocations reuse it; no AWS client is created
# until the first request needs one.
http = Mangum(create_admin_app(), lifespan="off")


def handler(event: Any, context: Any) -> Any:
    if tasks.is_task(event):  # a schedule's event, not a function URL request
        return tasks.run(event)
    return http(event, context)
