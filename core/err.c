/* err.c - error code texts and the message-formatting helper (see err.h). */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

const char *err_str(int code)
{
    switch (code) {
    case MESH_OK: return "success";
    case MESH_ENOMEM: return "out of memory";
    case MESH_EIO: return "input/output error";
    case MESH_EINVAL: return "invalid argument";
    case MESH_EBADMODEL: return "corrupt or unsupported model file";
    case MESH_EPROTO: return "protocol error";
    case MESH_ERANGE: return "value out of range";
    case MESH_EUNSUPPORTED: return "not supported";
    case MESH_ENOTFOUND: return "not found";
    case MESH_ECRYPTO: return "cryptographic check failed";
    case MESH_ETIMEOUT: return "timed out";
    case MESH_ECLOSED: return "closed";
    case MESH_EAGAIN: return "try again";
    case MESH_EFULL: return "full";
    case MESH_ECANCELED: return "cancelled";
    default: return "unknown error";
    }
}

int err_set(char *err, size_t err_cap, int code, const char *fmt, ...)
{
    if (err && err_cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_cap, fmt, ap);
        va_end(ap);
    }
    return code;
}

int err_from_errno(int errnum)
{
    switch (errnum) {
    case 0: return MESH_OK;
    case ENOMEM: return MESH_ENOMEM;
    case ENOENT: return MESH_ENOTFOUND;
    case EINVAL: return MESH_EINVAL;
    case ERANGE: case EOVERFLOW: case EFBIG: return MESH_ERANGE;
    case EAGAIN: return MESH_EAGAIN;
    case ETIMEDOUT: return MESH_ETIMEOUT;
    case ECANCELED: return MESH_ECANCELED;
    case EPIPE: case ECONNRESET: return MESH_ECLOSED;
    default: return MESH_EIO;
    }
}
