/* threads.h -- how many threads a kernel asks for, and how many it was given.
 *
 * A kernel sizes its per-thread scratch for the count fl_resolve_threads() returns, then asks
 * OpenMP for a team of (at most) that many. OpenMP may grant fewer (OMP_THREAD_LIMIT,
 * OMP_DYNAMIC, OMP_MAX_ACTIVE_LEVELS, a call from inside another parallel region), so work
 * inside a region is always divided by FL_TEAM_SIZE(), the team actually running, never by
 * the count asked for. Scratch sized for more threads is then merely partly unused. */
#ifndef FL_IMPL_THREADS_H
#define FL_IMPL_THREADS_H

#include "impl/common.h"

/* Per-thread scratch is sized by the resolved count, so it is capped: more threads than this
 * only cost memory and barriers on any machine these kernels target. */
#define FL_MAX_THREADS 256

/* The thread count a kernel plans for: `requested` (<= 0: fl_default_threads()), capped at
 * FL_MAX_THREADS; 1 without OpenMP and in a process forked from one that used fastlstm
 * (libgomp's thread pool does not survive fork: a team of more than one would hang there). */
int fl_resolve_threads(int requested);

/* 1 in a process created by fork() after this library's first call (or a descendant). */
int fl_in_forked_child(void);

/* Inside a parallel region: the size of the team OpenMP actually granted. */
#ifdef FASTLSTM_OPENMP
#define FL_TEAM_SIZE() omp_get_num_threads()
#else
#define FL_TEAM_SIZE() 1
#endif

#endif
