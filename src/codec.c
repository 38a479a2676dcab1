/* placeholder: filled in by the codec binding */
#include "private.h"

void csm_open_codec(lua_State *L)
{
    (void)L;
}
