-- Migration one_time_tokens (sqlite). Filled in by the work that introduces these tables.
SELECT 1;
