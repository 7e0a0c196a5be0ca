/* ftmem/report.h — a JSON report of the heap for tools/ftmem-report,
 * which turns it into one self-contained HTML page (pools per size class
 * filling up, arenas, memory over time, collector pauses, top allocation
 * sites, the type census) or exports it for ms_print and flame graphs.
 * Included by ftmem.h.
 *
 * FTMEM_REPORT=<path> in the environment samples memory every
 * FTMEM_REPORT_INTERVAL ms (default 100) from process start and writes
 * the report to <path> at exit ("%p" in the path: the process id, for
 * programs that start others; a forked child that does not exec writes
 * none).  Errors: 0, or -1 with errno.
 */
#ifndef FTMEM_REPORT_H
#define FTMEM_REPORT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Start (or retune) the sampler thread: RSS, allocated and committed
 * bytes, traced bytes every interval_ms (> 0), and every collection's
 * duration and pause.  EINVAL, ENOMEM, EAGAIN (no thread). */
FTM_API int ftm_report_start(int interval_ms);
/* Stop the sampler (what it gathered stays for the next write). */
FTM_API void ftm_report_stop(void);
/* Write the report to path, complete or not at all: it is written beside
 * it and renamed into place.  EINVAL for an empty path; the error of
 * fopen/write/rename otherwise (the partial file is removed). */
FTM_API int ftm_report_write(const char *path);

#ifdef __cplusplus
}
#endif
#endif
