"""
What joins the nodes of one application: the Backplane interface the hubs send through, the
messages between nodes and their checks, the mirror of the other nodes' members (these three
sans-IO), and the Redis driver's parts (commands, presence, links).
"""
