/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_THREADS_H
#define KC_THREADS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* pthread_create with every signal blocked in the new thread. */
int kc_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* Keeps the first of several workers' failures (an errno). */
static inline void kc_fail_once(atomic_int *failed, int e)
{
	int zero = 0;
	atomic_compare_exchange_strong(failed, &zero, e);
}

/* Runs fn(arg) in that many threads, at most one per work item and at
 * least one (signals blocked in them), and waits for all; fn takes its
 * work from arg until there is none. */
void kc_run_pool(unsigned threads, size_t items, void *(*fn)(void *), void *arg);

#endif
