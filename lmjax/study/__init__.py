"""Studies: sweeps and their runner, scaling-law fits, and the plots people compare."""
