import dagster as dg

from .sensors import email_admins_on_failure

defs = dg.Definitions(sensors=[email_admins_on_failure])
