/* SPDX-License-Identifier: Apache-2.0 */
#include <signal.h>
#include <string.h>

#include "kc/signals.h"

static volatile sig_atomic_t pending;

static void on_signal(int sig)
{
	if (!pending)
		pending = sig;
}

void kc_signals_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* no SA_RESTART: a blocking wait should return so we can roll back */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

int kc_signals_pending(void)
{
	return pending;
}

void kc_signals_reset(void)
{
	pending = 0;
}

void kc_signals_raise_for_test(int sig)
{
	pending = sig;
}
