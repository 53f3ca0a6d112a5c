-- Active members' tag mismatches per unit, for each full scan (full scans are comparable over
-- time; daily incremental scans only see recently modified people).
SELECT m.run_started_at,
       m.unit_name,
       COUNT(*) AS mismatches
FROM {dataset}.ab_mismatches AS m
JOIN {dataset}.ab_scan_runs AS s ON s.run_id = m.run_id
WHERE m.inactive = FALSE
  AND s.mode = 'full'
GROUP BY m.run_started_at, m.unit_name
ORDER BY m.run_started_at, m.unit_name
