#include "err.h"

static const char *const names[] = {
#define CSM_ERR_NAME(code, name, text) name,
    CSM_ERRORS(CSM_ERR_NAME)
#undef CSM_ERR_NAME
};

static const char *const texts[] = {
#define CSM_ERR_TEXT(code, name, text) text,
    CSM_ERRORS(CSM_ERR_TEXT)
#undef CSM_ERR_TEXT
};

const char *csm_errname(int code)
{
    if (code < 0 || code >= CSM_NCODES)
        return "unknown";
    return names[code];
}

const char *csm_strerror(int code)
{
    if (code < 0 || code >= CSM_NCODES)
        return "unknown error";
    return texts[code];
}
