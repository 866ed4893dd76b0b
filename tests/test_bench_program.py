"""scripts/bench_program.py: the dependency chain does not grow with the cluster."""
from scripts import bench_program


def test_longest_chain_is_the_same_at_6_and_30_nodes():
    prod = bench_program.evaluate(bench_program.prod_stack())
    generated = bench_program.evaluate(bench_program.generated_stack(30))
    vms = "vsphere:index/virtualMachine:VirtualMachine"
    assert (len(prod.of_type(vms)), len(generated.of_type(vms))) == (6, 30)
    assert len(bench_program.longest_chain(generated)) == len(bench_program.longest_chain(prod))
