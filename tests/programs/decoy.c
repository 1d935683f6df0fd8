/* What replaces spawner's file on disk after a failure: every function has
 * a name that must never appear in an attribution. */
int decoy_never_ran_a(int n) { return n * 3 + 1; }
int decoy_never_ran_b(int n) { return n * 5 + 2; }
int decoy_never_ran_c(int n) { return n * 7 + 3; }
int spawn_workers(int n) { return decoy_never_ran_a(n) + decoy_never_ran_b(n) + decoy_never_ran_c(n); }
