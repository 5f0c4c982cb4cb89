from lmjax.plan.main import main

main()
