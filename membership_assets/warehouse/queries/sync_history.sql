-- Every registry sync in a period, failed and dry runs included.
-- Parameters: {start}, {end} as 'YYYY-MM-DD HH:MM:SS' (UTC), end exclusive.
SELECT sync_id,
       sync_time,
       source,
       status,
       dry_run,
       members_fetched,
       members_added,
       members_removed,
       members_updated,
       members_rejected,
       duration_ms
FROM {dataset}.membership_sync_log
WHERE sync_time >= TIMESTAMP '{start}'
  AND sync_time < TIMESTAMP '{end}'
ORDER BY sync_time
