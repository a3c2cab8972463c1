"""The semantic cache's labeled evaluation set: pairs of questions, and whether one's answer serves the other.

Each ``Item`` is a question with hand-written paraphrases (``same``: rewording, synonyms, reordering)
and near misses by kind (``differ``: a different number, date or time, a negation, another
entity/product/plan, another programming language, the opposite direction, an added constraint,
another customer's ticket). ``pairs()`` adds machine-made paraphrases of every question (a typo, a
politeness wrapper, lower case without punctuation) and returns the labeled pairs:
``(cached question, new question, same answer?, kind)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    question: str
    same: tuple[str, ...] = ()
    differ: dict[str, str] = field(default_factory=dict)


ITEMS: tuple[Item, ...] = (
    Item("How do I sort a list in Python?",
         ("How can I sort a list in Python?", "In Python, how do I sort a list?", "What's the way to sort a Python list?"),
         {"language": "How do I sort a list in JavaScript?", "constraint": "How do I sort a list in Python without "
          "using sorted()?", "negation": "Why does my list not sort in Python?"}),
    Item("What is the capital of France?",
         ("What's the capital city of France?", "Which city is the capital of France?", "capital of France?"),
         {"entity": "What is the capital of Germany?", "entity2": "What is the capital of French Guiana?"}),
    Item("How do I reset my password?",
         ("How can I reset my password?", "What are the steps to reset my password?", "I need to reset my password, how?"),
         {"negation": "Why can't I reset my password?", "entity": "How do I reset my PIN?",
          "constraint": "How do I reset my password without email access?"}),
    Item("Convert 100 USD to EUR",
         ("Convert 100 US dollars to EUR", "100 USD to EUR, convert please", "Please convert 100 USD to EUR"),
         {"number": "Convert 200 USD to EUR", "direction": "Convert 100 EUR to USD", "entity": "Convert 100 USD to GBP"}),
    Item("Flights from Paris to London tomorrow",
         ("flights from Paris to London for tomorrow", "Show flights from Paris to London tomorrow",
          "Tomorrow's flights from Paris to London"),
         {"direction": "Flights from London to Paris tomorrow", "date": "Flights from Paris to London on Friday",
          "entity": "Flights from Paris to Berlin tomorrow"}),
    Item("Is it safe to take ibuprofen with alcohol?",
         ("Is taking ibuprofen with alcohol safe?", "Can I safely take ibuprofen with alcohol?",
          "ibuprofen with alcohol, is it safe?"),
         {"negation": "Why is it not safe to take ibuprofen with alcohol?", "entity": "Is it safe to take "
          "acetaminophen with alcohol?", "constraint": "Is it safe to take ibuprofen with alcohol while pregnant?"}),
    Item("What is the price of the Pro plan?",
         ("How much does the Pro plan cost?", "What does the Pro plan cost?", "Pro plan price?"),
         {"entity": "What is the price of the Enterprise plan?", "constraint": "What is the price of the Pro plan "
          "for students?", "number": "What is the price of the Pro plan for 5 seats?"}),
    Item("Summarize the benefits of remote work",
         ("Summarize the advantages of remote work", "Give me a summary of the benefits of remote work",
          "Remote work benefits: summarize them"),
         {"negation": "Summarize the drawbacks of remote work", "constraint": "Summarize the benefits of remote "
          "work in 3 bullet points", "entity": "Summarize the benefits of office work"}),
    Item("Write a haiku about autumn",
         ("Compose a haiku about autumn", "Write me a haiku about autumn", "A haiku about autumn, please write one"),
         {"constraint": "Write a haiku about autumn in under 10 words", "date": "Write a haiku about spring",
          "entity": "Write a limerick about autumn"}),
    Item("What's the status of ticket #4521?",
         ("What is the status of ticket #4521?", "Status of ticket #4521?", "Can you check the status of ticket #4521"),
         {"customer": "What's the status of ticket #4522?", "customer2": "What's the status of ticket #4521 for "
          "Globex?", "negation": "Why is ticket #4521 not resolved?"}),
    Item("How many days are there in February 2024?",
         ("How many days does February 2024 have?", "Number of days in February 2024?", "In February 2024, how many days are there?"),
         {"date": "How many days are there in February 2023?", "date2": "How many days are there in March 2024?",
          "constraint": "How many working days are there in February 2024?"}),
    Item("Translate 'good morning' from English to Spanish",
         ("Translate 'good morning' from English into Spanish", "Please translate 'good morning' from English to Spanish",
          "From English to Spanish, translate 'good morning'"),
         {"direction": "Translate 'good morning' from Spanish to English", "entity": "Translate 'good morning' "
          "from English to French", "entity2": "Translate 'good night' from English to Spanish"}),
    Item("How do I cancel my subscription?",
         ("How can I cancel my subscription?", "What's the way to cancel my subscription?", "Cancel my subscription: how do I do it?"),
         {"negation": "Why can't I cancel my subscription?", "constraint": "How do I cancel my subscription and "
          "get a refund?", "entity": "How do I pause my subscription?"}),
    Item("What time does the store open on Sunday?",
         ("When does the store open on Sunday?", "On Sunday, what time does the store open?", "Store opening time on Sunday?"),
         {"date": "What time does the store open on Monday?", "direction": "What time does the store close on "
          "Sunday?", "entity": "What time does the pharmacy open on Sunday?"}),
    Item("Is a cat bigger than a dog?",
         ("Is a cat larger than a dog?", "Are cats bigger than dogs?", "Is a cat big compared with a dog?"),
         {"direction": "Is a dog bigger than a cat?", "negation": "Is a cat not bigger than a dog?",
          "entity": "Is a cat bigger than a rabbit?"}),
    Item("How do I read a CSV file in Pandas?",
         ("How can I read a CSV file with Pandas?", "Reading a CSV file in Pandas: how?", "In Pandas, how do I read a CSV file?"),
         {"language": "How do I read a CSV file in R?", "entity": "How do I read an Excel file in Pandas?",
          "direction": "How do I write a CSV file in Pandas?"}),
    Item("Book a table for 2 at 7pm",
         ("Book a table for 2 people at 7pm", "Please book a table for 2 at 7pm", "At 7pm, book a table for 2"),
         {"number": "Book a table for 4 at 7pm", "time": "Book a table for 2 at 8pm", "negation": "Don't book a table for 2 at 7pm"}),
    Item("What are the side effects of aspirin?",
         ("What side effects does aspirin have?", "Aspirin side effects?", "List the side effects of aspirin"),
         {"entity": "What are the side effects of ibuprofen?", "constraint": "What are the side effects of aspirin "
          "in children?", "negation": "What are the effects of aspirin, not the side effects?"}),
    Item("How do I center a div in CSS?",
         ("How can I center a div in CSS?", "Centering a div in CSS, how?", "In CSS, how do I center a div?"),
         {"constraint": "How do I center a div in CSS without flexbox?", "entity": "How do I center an image in CSS?",
          "direction": "How do I center a div vertically in CSS?"}),
    Item("Explain the difference between TCP and UDP",
         ("What is the difference between TCP and UDP?", "Explain how TCP differs from UDP",
          "Difference between TCP and UDP, explain please"),
         {"entity": "Explain the difference between TCP and QUIC", "constraint": "Explain the difference between "
          "TCP and UDP for a child", "negation": "Explain what TCP and UDP have in common, not the difference"}),
    Item("Recommend a laptop under $1000",
         ("Recommend a laptop for under $1000", "Can you recommend a laptop under $1000?", "Which laptop under $1000 do you recommend?"),
         {"number": "Recommend a laptop under $1500", "constraint": "Recommend a gaming laptop under $1000",
          "direction": "Recommend a laptop over $1000"}),
    Item("What is the boiling point of water in Celsius?",
         ("What's the boiling point of water in Celsius?", "Boiling point of water in Celsius?",
          "In Celsius, what is the boiling point of water?"),
         {"entity": "What is the boiling point of water in Fahrenheit?", "direction": "What is the freezing point "
          "of water in Celsius?", "constraint": "What is the boiling point of water in Celsius at high altitude?"}),
    Item("Refund order 88231",
         ("Please refund order 88231", "I'd like a refund for order 88231", "Refund my order 88231"),
         {"customer": "Refund order 88213", "negation": "Don't refund order 88231", "number": "Refund half of order 88231"}),
    Item("How do I install Docker on Ubuntu?",
         ("How can I install Docker on Ubuntu?", "Installing Docker on Ubuntu: how?", "On Ubuntu, how do I install Docker?"),
         {"entity": "How do I install Docker on Windows?", "direction": "How do I uninstall Docker on Ubuntu?",
          "constraint": "How do I install Docker on Ubuntu without root?"}),
    Item("Give me a recipe for chocolate cake",
         ("Can you give me a recipe for chocolate cake?", "A recipe for chocolate cake, please", "Chocolate cake recipe?"),
         {"entity": "Give me a recipe for carrot cake", "constraint": "Give me a recipe for vegan chocolate cake",
          "negation": "Give me a recipe for chocolate cake without eggs"}),
    Item("What is 15% of 80?",
         ("What's 15% of 80?", "Calculate 15% of 80", "15% of 80 is what?"),
         {"number": "What is 15% of 90?", "number2": "What is 25% of 80?", "direction": "What is 80% of 15?"}),
    Item("Who wrote Pride and Prejudice?",
         ("Who is the author of Pride and Prejudice?", "Pride and Prejudice was written by whom?", "Who wrote the novel Pride and Prejudice?"),
         {"entity": "Who wrote Sense and Sensibility?", "constraint": "Who wrote the screenplay of Pride and Prejudice?"}),
    Item("How long should I boil an egg?",
         ("How long do I boil an egg?", "For how long should an egg be boiled?", "Boiling an egg: how long?"),
         {"constraint": "How long should I boil an egg for a runny yolk?", "entity": "How long should I boil pasta?",
          "number": "How long should I boil 12 eggs?"}),
    Item("What's the weather in Tokyo today?",
         ("What is the weather in Tokyo today?", "Today's weather in Tokyo?", "How's the weather in Tokyo today?"),
         {"entity": "What's the weather in Kyoto today?", "date": "What's the weather in Tokyo tomorrow?",
          "date2": "What's the weather in Tokyo this weekend?"}),
    Item("Upgrade my account to the Business plan",
         ("Please upgrade my account to the Business plan", "I want to upgrade my account to the Business plan",
          "Upgrade me to the Business plan"),
         {"entity": "Upgrade my account to the Enterprise plan", "direction": "Downgrade my account to the Business plan",
          "customer": "Upgrade Acme's account to the Business plan"}),
    Item("How do I merge two dictionaries in Python?",
         ("How can I merge two dictionaries in Python?", "Merging two dictionaries in Python: how?",
          "In Python, how do I merge two dicts?"),
         {"number": "How do I merge three dictionaries in Python?", "language": "How do I merge two dictionaries "
          "in Ruby?", "constraint": "How do I merge two dictionaries in Python without overwriting keys?"}),
    Item("What is the distance from the Earth to the Moon?",
         ("How far is the Moon from the Earth?", "Distance from the Earth to the Moon?",
          "What's the distance from Earth to the Moon?"),
         {"entity": "What is the distance from the Earth to Mars?", "constraint": "What is the distance from the "
          "Earth to the Moon in miles?", "entity2": "What is the distance from the Earth to the Sun?"}),
    Item("Schedule a meeting with Sarah on Tuesday at 3pm",
         ("Set up a meeting with Sarah on Tuesday at 3pm", "Please schedule a meeting with Sarah on Tuesday at 3pm",
          "On Tuesday at 3pm, schedule a meeting with Sarah"),
         {"customer": "Schedule a meeting with John on Tuesday at 3pm", "date": "Schedule a meeting with Sarah on "
          "Wednesday at 3pm", "time": "Schedule a meeting with Sarah on Tuesday at 4pm",
          "negation": "Cancel the meeting with Sarah on Tuesday at 3pm"}),
    Item("Is coffee bad for your heart?",
         ("Is coffee harmful to your heart?", "Is drinking coffee bad for the heart?", "Coffee: bad for your heart?"),
         {"negation": "Is coffee not bad for your heart?", "entity": "Is tea bad for your heart?",
          "entity2": "Is coffee bad for your liver?"}),
    Item("How do I make an HTTP request in Go?",
         ("How can I make an HTTP request in Go?", "Making an HTTP request in Go: how?", "In Go, how do I make an HTTP request?"),
         {"language": "How do I make an HTTP request in Rust?", "constraint": "How do I make an HTTP request in Go "
          "with a timeout?", "entity": "How do I make a gRPC request in Go?"}),
    Item("What is the population of Canada?",
         ("What's the population of Canada?", "How many people live in Canada?", "Population of Canada?"),
         {"entity": "What is the population of Australia?", "date": "What was the population of Canada in 1990?",
          "constraint": "What is the population of Canada's capital?"}),
    Item("Show my invoices from March",
         ("Show me my invoices from March", "List my invoices from March", "My invoices from March, please"),
         {"date": "Show my invoices from April", "customer": "Show Globex's invoices from March",
          "negation": "Show my unpaid invoices from March"}),
    Item("How do I delete a branch in Git?",
         ("How can I delete a branch in Git?", "Deleting a branch in Git: how?", "In Git, how do I remove a branch?"),
         {"direction": "How do I create a branch in Git?", "constraint": "How do I delete a remote branch in Git?",
          "entity": "How do I delete a tag in Git?"}),
    Item("What should I pack for a week in Iceland?",
         ("What should I bring for a week in Iceland?", "Packing for a week in Iceland: what should I pack?",
          "For a week in Iceland, what should I pack?"),
         {"number": "What should I pack for two weeks in Iceland?", "entity": "What should I pack for a week in "
          "Thailand?", "date": "What should I pack for a week in Iceland in winter?"}),
    Item("Calculate the area of a circle with radius 5",
         ("Compute the area of a circle with radius 5", "What's the area of a circle with radius 5?",
          "Area of a circle with radius 5?"),
         {"number": "Calculate the area of a circle with radius 6", "entity": "Calculate the circumference of a "
          "circle with radius 5", "entity2": "Calculate the area of a square with side 5"}),
    Item("Why is the sky blue?",
         ("Why does the sky look blue?", "What makes the sky blue?", "Why is the sky blue in color?"),
         {"entity": "Why is the sea blue?", "date": "Why is the sky red at sunset?", "negation": "Why is the sky not blue at night?"}),
    Item("Draft an email to my landlord about a broken heater",
         ("Write an email to my landlord about a broken heater", "Compose an email to my landlord about a broken heater",
          "Draft an email about a broken heater to my landlord"),
         {"entity": "Draft an email to my landlord about a broken fridge", "customer": "Draft an email to my boss "
          "about a broken heater", "constraint": "Draft an angry email to my landlord about a broken heater"}),
    Item("Does the Basic plan include API access?",
         ("Is API access included in the Basic plan?", "Does the Basic plan come with API access?",
          "Basic plan: does it include API access?"),
         {"entity": "Does the Pro plan include API access?", "entity2": "Does the Basic plan include SSO?",
          "negation": "Why doesn't the Basic plan include API access?"}),
    Item("What is the time complexity of quicksort?",
         ("What's the time complexity of quicksort?", "Time complexity of quicksort?", "How fast is quicksort in big-O?"),
         {"entity": "What is the time complexity of mergesort?", "constraint": "What is the worst-case time "
          "complexity of quicksort?", "entity2": "What is the space complexity of quicksort?"}),
    Item("How do I convert a string to an integer in Java?",
         ("How can I convert a string to an integer in Java?", "Converting a string to an integer in Java: how?",
          "In Java, how do I convert a string to an int?"),
         {"language": "How do I convert a string to an integer in C#?", "direction": "How do I convert an integer "
          "to a string in Java?", "entity": "How do I convert a string to a float in Java?"}),
    Item("List the planets in the solar system",
         ("List all the planets in the solar system", "Which planets are in the solar system?", "Name the planets in the solar system"),
         {"constraint": "List the planets in the solar system by size", "negation": "List the dwarf planets in the solar system",
          "number": "List the first 3 planets in the solar system"}),
    Item("How much does shipping to Canada cost?",
         ("What does shipping to Canada cost?", "What is the shipping cost to Canada?", "Shipping to Canada, how much?"),
         {"entity": "How much does shipping to Mexico cost?", "direction": "How much does shipping from Canada cost?",
          "constraint": "How much does express shipping to Canada cost?"}),
    Item("When was the Eiffel Tower built?",
         ("When was the Eiffel Tower constructed?", "In what year was the Eiffel Tower built?", "The Eiffel Tower was built when?"),
         {"entity": "When was the Statue of Liberty built?", "direction": "When was the Eiffel Tower last renovated?"}),
    Item("Generate a SQL query to count users by country",
         ("Write a SQL query to count users by country", "Generate an SQL query that counts users by country",
          "SQL query to count users by country, please generate it"),
         {"entity": "Generate a SQL query to count orders by country", "constraint": "Generate a SQL query to count "
          "active users by country", "language": "Generate a MongoDB query to count users by country"}),
    Item("How do I change my shipping address for order 5521?",
         ("How can I change the shipping address for order 5521?", "Change my shipping address for order 5521: how?",
          "For order 5521, how do I change my shipping address?"),
         {"customer": "How do I change my shipping address for order 5512?", "entity": "How do I change my billing "
          "address for order 5521?", "negation": "Why can't I change my shipping address for order 5521?"}),
)


# Written after the guard was frozen (2026-11-30) and never used to tune it: a less flattering estimate.
HELD_OUT: tuple[Item, ...] = (
    Item("How do I rotate an image by 90 degrees in Photoshop?",
         ("How can I rotate an image 90 degrees in Photoshop?", "In Photoshop, how do I rotate an image by 90 degrees?"),
         {"number": "How do I rotate an image by 180 degrees in Photoshop?", "entity": "How do I rotate an image by "
          "90 degrees in GIMP?", "direction": "How do I rotate an image by 90 degrees counterclockwise in Photoshop?"}),
    Item("What are the opening hours of the Louvre on Wednesday?",
         ("When is the Louvre open on Wednesday?", "Louvre opening hours on Wednesday?"),
         {"date": "What are the opening hours of the Louvre on Thursday?", "entity": "What are the opening hours "
          "of the Prado on Wednesday?", "negation": "Is the Louvre closed on Wednesday?"}),
    Item("Compare the iPhone 15 and the Pixel 8 cameras",
         ("Compare the cameras of the iPhone 15 and the Pixel 8", "How do the iPhone 15 and Pixel 8 cameras compare?"),
         {"number": "Compare the iPhone 14 and the Pixel 8 cameras", "entity": "Compare the iPhone 15 and the "
          "Galaxy S24 cameras", "constraint": "Compare the iPhone 15 and the Pixel 8 cameras in low light"}),
    Item("How do I make a GET request with curl?",
         ("How can I make a GET request with curl?", "Making a GET request with curl: how?"),
         {"entity": "How do I make a POST request with curl?", "language": "How do I make a GET request with "
          "PowerShell?", "constraint": "How do I make a GET request with curl and follow redirects?"}),
    Item("Suggest a name for a bakery in Lisbon",
         ("Suggest a bakery name for Lisbon", "Can you suggest a name for a bakery in Lisbon?"),
         {"entity": "Suggest a name for a bakery in Porto", "entity2": "Suggest a name for a cafe in Lisbon",
          "number": "Suggest five names for a bakery in Lisbon"}),
    Item("How long is the flight from New York to Tokyo?",
         ("How long does the flight from New York to Tokyo take?", "Flight time from New York to Tokyo?"),
         {"direction": "How long is the flight from Tokyo to New York?", "entity": "How long is the flight from "
          "New York to Seoul?", "constraint": "How long is the nonstop flight from New York to Tokyo?"}),
    Item("Is my account eligible for a refund of invoice 7781?",
         ("Can I get a refund for invoice 7781 on my account?", "Is invoice 7781 eligible for a refund for my account?"),
         {"customer": "Is my account eligible for a refund of invoice 7718?", "negation": "Why is my account not "
          "eligible for a refund of invoice 7781?", "entity": "Is my account eligible for a credit of invoice 7781?"}),
    Item("What's a good beginner workout for 3 days a week?",
         ("What is a good beginner workout for 3 days a week?", "Good beginner workout, 3 days a week?"),
         {"number": "What's a good beginner workout for 5 days a week?", "entity": "What's a good advanced workout "
          "for 3 days a week?", "constraint": "What's a good beginner workout for 3 days a week at home?"}),
    Item("Explain recursion to a beginner",
         ("Explain recursion for a beginner", "Can you explain recursion to a beginner?"),
         {"entity": "Explain iteration to a beginner", "entity2": "Explain recursion to an expert",
          "constraint": "Explain recursion to a beginner with a Python example"}),
    Item("What is the VAT rate in Germany?",
         ("What's the VAT rate in Germany?", "Germany's VAT rate?"),
         {"entity": "What is the VAT rate in Austria?", "constraint": "What is the reduced VAT rate in Germany?",
          "date": "What was the VAT rate in Germany in 2020?"}),
    Item("Can I bring a laptop in my carry-on bag?",
         ("Can I take a laptop in my carry-on bag?", "Is a laptop allowed in my carry-on bag?"),
         {"entity": "Can I bring a power bank in my carry-on bag?", "direction": "Can I bring a laptop in my "
          "checked bag?", "negation": "Why can't I bring a laptop in my carry-on bag?"}),
    Item("How do I export my contacts from Gmail to Outlook?",
         ("How can I export my contacts from Gmail to Outlook?", "Exporting my contacts from Gmail to Outlook: how?"),
         {"direction": "How do I export my contacts from Outlook to Gmail?", "entity": "How do I export my "
          "calendar from Gmail to Outlook?", "entity2": "How do I export my contacts from Gmail to iCloud?"}),
)


def _typo(text: str) -> str:
    """Two letters of the longest word swapped: the commonest typing slip."""
    words = text.split()
    index = max(range(len(words)), key=lambda i: (len(words[i].strip("?.,!'")), -i))
    word = words[index]
    if len(word) >= 6 and word[2:4].isalpha():
        words[index] = word[:2] + word[3] + word[2] + word[4:]
    return " ".join(words)


def _polite(text: str) -> str:
    return f"Hi! Could you please help me with this: {text[0].lower()}{text[1:]} Thanks a lot"


def _plain(text: str) -> str:
    return "".join(c for c in text.lower() if c not in "?!.")


MACHINE_PARAPHRASES = {"typo": _typo, "politeness": _polite, "lowercase": _plain}


def pairs(items: tuple[Item, ...] = ITEMS) -> list[tuple[str, str, bool, str]]:
    """``(cached question, new question, same answer?, kind)`` for every item."""
    out: list[tuple[str, str, bool, str]] = []
    for item in items:
        q = item.question
        out += [(q, s, True, "rewording") for s in item.same]
        out += [(q, make(q), True, kind) for kind, make in MACHINE_PARAPHRASES.items()]
        out += [(s, make(s), True, kind) for s in item.same[:1] for kind, make in MACHINE_PARAPHRASES.items()]
        out += [(q, d, False, kind.rstrip("0123456789")) for kind, d in item.differ.items()]
        out += [(item.same[0], d, False, kind.rstrip("0123456789")) for kind, d in item.differ.items() if item.same]
    return out
