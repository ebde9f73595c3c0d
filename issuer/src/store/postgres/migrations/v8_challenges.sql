-- Migration challenges (postgres). Filled in by the work that introduces these tables.
SELECT 1;
