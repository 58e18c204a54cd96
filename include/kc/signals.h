/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_SIGNALS_H
#define KC_SIGNALS_H

/*
 * SIGINT/SIGTERM/SIGHUP only set a flag; the orchestrator looks at it
 * between steps and rolls back.  Worker threads block these signals.
 */
void kc_signals_install(void);
/* The signal that arrived, 0 if none. */
int kc_signals_pending(void);
/* For tests. */
void kc_signals_reset(void);
void kc_signals_raise_for_test(int sig);

#endif
