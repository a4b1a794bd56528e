/* threads.c -- the thread count of every kernel call, and serial kernels after fork().
 *
 * libgomp keeps a pool of worker threads per thread that has started a parallel region. fork()
 * copies only the calling thread, so in the child the pool's bookkeeping describes threads
 * that no longer exist, and the next region of more than one thread waits for them forever
 * (a multiprocessing worker started with the fork method hangs in its first fastlstm call).
 * As PyTorch does, a pthread_atfork child handler marks the process as a forked child, and
 * there every kernel plans for one thread. A region of one thread is safe: libgomp starts it
 * without touching the pool (team.c, gomp_team_start: `if (nthreads == 1) return;`). That
 * holds for a child forked by another thread while a kernel was running, too: the forking
 * thread is the child's only thread and the kernel's team does not exist there.
 *
 * The handler is registered (once) by the first call that resolves a thread count, which is
 * before this library can have started a pool. A child forked before that runs its kernels
 * in parallel as usual. Results are the same bits either way (see threads.h). */
#include "impl/common.h"
#include "impl/threads.h"

#if defined(FASTLSTM_OPENMP) && !defined(_WIN32)
#include <pthread.h>
#define FL_WATCH_FORK 1
#endif

#ifdef FL_WATCH_FORK
/* written only by the child handler, while the child has a single thread */
static int forked_child = 0;
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void) { forked_child = 1; }
static void watch_fork(void) { (void)pthread_atfork(NULL, NULL, on_fork_child); }
#endif

int fl_in_forked_child(void) {
#ifdef FL_WATCH_FORK
    (void)pthread_once(&watch_once, watch_fork);
    return forked_child;
#else
    return 0;
#endif
}

int fl_default_threads(void) {
#ifdef FASTLSTM_OPENMP
    return fl_in_forked_child() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

int fl_resolve_threads(int requested) {
#ifdef FASTLSTM_OPENMP
    if (fl_in_forked_child()) return 1;
    int n = requested > 0 ? requested : fl_default_threads();
    return n < FL_MAX_THREADS ? n : FL_MAX_THREADS;
#else
    (void)requested;
    return 1;
#endif
}
