"""What users plug in: the command line now; the conversation agent, LangChain tool and servers later."""
