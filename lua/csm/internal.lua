-- The binding's internal functions (csm.core.internals(), which hands them
-- out once): the machine's constructor and the driver's primitives, the
-- loop's post. Only the engine's own modules use them; they are on no
-- object's methods.
return require("csm.core").internals()
