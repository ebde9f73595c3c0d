-- Migration one_time_tokens (postgres). Filled in by the work that introduces these tables.
SELECT 1;
