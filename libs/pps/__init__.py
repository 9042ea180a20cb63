"""Pure pipeline-system helpers shared by pps, the gateway and pachctl:
pipeline specs (``libs.pps.spec``) and cron schedules (``libs.pps.cron``)."""
