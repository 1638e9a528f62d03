# HelloAgent
A greeter that says hello, then goodbye.

## Main
### Triggers
- When the program starts
### Steps
- Say hello to the user
- Say goodbye to the user
- End the program

```public.json
[]
```
