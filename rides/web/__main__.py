"""`python -m rides.web`: the web service image's command."""

from rides.web.app import main

if __name__ == "__main__":
    main()
