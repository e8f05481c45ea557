#include <stdio.h>

#include "img/img.h"

int img_fail(const struct vt_error *e)
{
	vt_error_print(e, stderr);
	return 1;
}
