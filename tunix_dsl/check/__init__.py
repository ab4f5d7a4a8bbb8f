"""From AST to checked IR: the checker's phases, jax-free.

    resolve   names to declarations (duplicates, unknowns, cycles)
    evaluate  expressions to values, `--set` applied
    build     values into typed schema objects (pydantic), located errors
    checker   runs the phases and the lint rules, returns diagnostics
    ir        the checked pipeline the compiler lowers
    dataflow  the graph of stages, models and data (networkx)
"""
