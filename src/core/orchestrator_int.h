/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ORCHESTRATOR_INT_H
#define KC_ORCHESTRATOR_INT_H

#include "kc/orchestrator.h"
#include "kc/undo.h"

/* KC_EXIT_INTERRUPTED when SIGINT/SIGTERM/SIGHUP arrived. */
int kc_check_interrupted(struct kc_error **err);
/* Runs the undo stack; always returns -1.  A failing rollback turns *err
 * into KC_EXIT_ROLLBACK and says so. */
int kc_rollback(struct kc_undo *u, struct kc_error **err);
void kc_fill_host_info(struct kc_manifest *m, const struct kc_backends *b);
int kc_prepare_images_dir(const char *dir, struct kc_error **err);

#endif
