"""The library every theodolite service uses: documents, validation, planner core, execution."""
