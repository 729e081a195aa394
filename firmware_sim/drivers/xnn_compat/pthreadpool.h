// xnnpack.h includes <pthreadpool.h> only for the opaque pthreadpool_t type. Debian's
// libxnnpack-dev does not pull libpthreadpool-dev, so declare that one type here (same
// definition as pthreadpool's header). The float driver always passes a NULL pool.
#ifndef FIRMWARE_SIM_PTHREADPOOL_COMPAT_H_
#define FIRMWARE_SIM_PTHREADPOOL_COMPAT_H_
typedef struct pthreadpool* pthreadpool_t;
#endif
