-- What tag cleanup did, per run and outcome (dry runs show what would have been deleted).
SELECT run_id,
       attempt_run_id,
       field,
       action,
       COUNT(*) AS taggings
FROM {dataset}.ab_tagging_deletions
GROUP BY run_id, attempt_run_id, field, action
ORDER BY run_id, attempt_run_id, field, action
