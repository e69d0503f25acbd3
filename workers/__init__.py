"""calhooks reactions: arq workers that run the rules against Cal.com."""
