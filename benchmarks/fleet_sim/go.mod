module github.com/inferbridge/inferbridge/benchmarks/fleet_sim

go 1.26.0
