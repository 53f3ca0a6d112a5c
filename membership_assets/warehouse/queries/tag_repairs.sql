-- What tag repair did, per run: people repaired (verified or not), left for a human and why, and
-- what went wrong (dry runs show who would have been repaired).
WITH person AS (
    SELECT run_id,
           person_id,
           MAX(CASE WHEN step = 'hold' THEN reason END) AS hold_reason,
           MAX(CASE WHEN step = 'hold' THEN action END) AS hold_action,
           MAX(CASE WHEN step = 'verify' THEN action END) AS verify_action,
           SUM(CASE WHEN action = 'added' THEN 1 ELSE 0 END) AS tags_added,
           SUM(CASE WHEN action = 'removed' THEN 1 ELSE 0 END) AS taggings_removed,
           SUM(CASE WHEN action = 'dry_run' THEN 1 ELSE 0 END) AS dry_run_steps,
           SUM(CASE WHEN action NOT IN ('added', 'already_present', 'removed', 'already_gone', 'dry_run',
                                        'needs_human', 'cleanup_only', 'verified', 'unverified')
                    THEN 1 ELSE 0 END) AS problem_steps,
           MAX(CASE WHEN action NOT IN ('added', 'already_present', 'removed', 'already_gone', 'dry_run',
                                        'needs_human', 'cleanup_only', 'verified', 'unverified')
                    THEN action END) AS problem
    FROM {dataset}.ab_tag_repairs
    GROUP BY run_id, person_id
)
SELECT run_id,
       CASE
           WHEN hold_action = 'cleanup_only' THEN 'left to cleanup'
           WHEN hold_reason IS NOT NULL THEN 'needs a human'
           WHEN dry_run_steps > 0 THEN 'would repair (dry run)'
           WHEN problem_steps > 0 THEN 'not repaired'
           WHEN verify_action = 'verified' THEN 'repaired, verified'
           ELSE 'repaired, not verified'
       END AS outcome,
       COALESCE(hold_reason, problem, '') AS why,
       COUNT(*) AS people,
       SUM(tags_added) AS tags_added,
       SUM(taggings_removed) AS taggings_removed
FROM person
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
