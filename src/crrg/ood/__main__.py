from crrg.ood.fit import main

main()
