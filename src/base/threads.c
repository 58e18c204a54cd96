/* SPDX-License-Identifier: Apache-2.0 */
/* Worker threads, with every signal blocked in them: SIGINT and friends
 * stay with the main thread, which decides about rollback. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "kc/alloc.h"
#include "kc/threads.h"

int kc_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

void kc_run_pool(unsigned threads, size_t items, void *(*fn)(void *), void *arg)
{
	if (threads > items) /* more would find nothing to do */
		threads = (unsigned)items;
	if (threads < 1)
		threads = 1;
	pthread_t *tids = kc_xcalloc(threads, sizeof(*tids));
	unsigned started = 0;
	for (; started < threads; started++)
		if (kc_thread_start(&tids[started], fn, arg) != 0)
			break;
	if (!started) /* no thread to be had: the work still gets done */
		fn(arg);
	for (unsigned t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	free(tids);
}
