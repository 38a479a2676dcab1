/* placeholder: filled in by the os binding */
#include "private.h"

void csm_open_os(lua_State *L)
{
    (void)L;
}
