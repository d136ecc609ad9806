"""The training lab: the trainers of the `shapes` profile's models (the text route's BLIP models and T5 question
generator, the Q-Former bridges, the projection bridge). Above the runtime: nothing in the engine, graphs, tools or
front ends imports it (`.importlinter` checks that); `vqagraph-lab` runs it in its own process."""
