// Compiles pch.h once; every other target reuses it.
