-- Migration challenges (sqlite). Filled in by the work that introduces these tables.
SELECT 1;
