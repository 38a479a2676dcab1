/* placeholder */
int csm_failsync_placeholder;
