/* SPDX-License-Identifier: GPL-2.0 */
/* Input of the bindgen rule in Kbuild. */
#include "helpers.h"
