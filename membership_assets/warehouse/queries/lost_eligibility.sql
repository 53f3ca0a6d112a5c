-- Who lost voting eligibility in a period: removed, or moved from active to suspended.
-- Parameters: {start}, {end} as 'YYYY-MM-DD HH:MM:SS' (UTC), end exclusive.
SELECT d.kennitala,
       d.old_name AS name,
       d.old_status,
       d.new_status,
       l.sync_time,
       l.source
FROM {dataset}.membership_deltas AS d
JOIN {dataset}.membership_sync_log AS l ON l.sync_id = d.sync_id
WHERE d.dry_run = FALSE
  AND l.status IN ('success', 'partial')
  AND d.old_status = 'active'
  AND d.new_status IN ('removed', 'suspended')
  AND l.sync_time >= TIMESTAMP '{start}'
  AND l.sync_time < TIMESTAMP '{end}'
ORDER BY l.sync_time, d.kennitala
